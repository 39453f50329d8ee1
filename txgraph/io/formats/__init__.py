"""Image format drivers other than raw and qcow2: one module per QEMU driver.

vdi, vpc, qcow (v1), qed, parallels and vmdk (read and write where QEMU 7.2
writes them). :mod:`txgraph.io.drivers.formats` imports (and so registers)
every driver module; :mod:`txgraph.io.formats.probes` holds their
``bdrv_probe`` scores.
"""

"""The ``ccrotate`` command line. Top of the layers: may import anything."""

"""multistore's own xcube data stores (each registered in ``multistore.plugin``)."""

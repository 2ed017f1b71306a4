"""Architectures, one family per module: emlp, egnn, canonical, gcnn, cgcnn, crystal, primer."""

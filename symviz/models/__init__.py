"""Model families, one module each (emlp, canonical, egnn, crystal, ...). Import the module you need."""

"""jaxcls."""

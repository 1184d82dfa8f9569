"""One module per resource kind behind the Provider interface in base.py."""

"""HTTP routes as Chalice blueprints: parse, validate, call the service, shape the response."""

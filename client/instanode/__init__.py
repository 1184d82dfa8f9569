"""instanode: SDK, CLI and MCP server for an instanode API."""

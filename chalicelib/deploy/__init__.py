"""Container deploys: a gzipped tarball with a Dockerfile becomes a running app at a URL."""

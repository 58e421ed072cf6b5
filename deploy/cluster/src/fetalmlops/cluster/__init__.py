"""A real single-node Kubernetes built from the package registries, and the project on it."""

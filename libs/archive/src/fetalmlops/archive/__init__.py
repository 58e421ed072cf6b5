"""The model archive (`.mar`): the code that runs inside it and the builder that writes it.

``handler`` and ``preprocessing`` are shipped as source in every archive and run where this
package is not installed (TorchServe, KServe, our inference service's unpacked copy);
``servable`` and ``packaging`` export a model and write the archive around them. The trainer
packages with it, and tests build an archive with it without training anything.
"""

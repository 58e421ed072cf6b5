"""Generated event classes. Do not edit."""

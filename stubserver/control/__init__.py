"""The control API (``/_stubserver/v1/...``): how a test drives a running stubserver."""

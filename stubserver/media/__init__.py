"""Media of our users served over federation (Server-Server API v1.19, "Content
Repository"): the store the control API fills and ``GET /v1/media/download/{mediaId}``."""

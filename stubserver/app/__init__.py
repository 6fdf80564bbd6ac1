"""app: the composition of ``stubserver run``: which listener serves which routes, filters
and observers, built from the areas (rooms, control, server keys, auth, outbound)."""

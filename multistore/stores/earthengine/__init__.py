"""Google Earth Engine data store: planned, bounded, resumable pixel downloads.

``store`` (the xcube ``DataStore``), ``query`` (images, time steps, expressions),
``planner`` (request layout), ``fetch`` (one request, classified retries),
``session`` (client setup, per-process limiter), ``resume`` (tile cache).
"""

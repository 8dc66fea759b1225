"""Point clouds: lidar (LAS/LAZ/COPC) to DSM/DTM/density rasters, and DEMs out as points.

- :mod:`demgen.pointcloud.lasio`: read and write LAS/LAZ with laspy (LAZ through lazrs),
  CRS from the header's WKT or GeoTIFF-key VLRs without pyproj, relative-height flag;
- :mod:`demgen.pointcloud.grid`: the output grid and the incremental per-cell accumulator
  (points arrive in chunks, so memory is bounded by the grid, not the cloud);
- :mod:`demgen.pointcloud.outliers`: the isolated-return filter that removes lone noise
  points but keeps summits;
- :mod:`demgen.pointcloud.fill`: harmonic (Laplace) gap filling of the DTM up to a maximum
  gap;
- :mod:`demgen.pointcloud.lidar`: ``demgen lidar`` (tiles -> dsm.tif, dtm.tif, density.tif);
- :mod:`demgen.pointcloud.export`: ``demgen points`` (a DEM -> one point per valid cell).
"""

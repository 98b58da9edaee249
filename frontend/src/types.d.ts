// d3-geo-voronoi ships no types; only polygons() of geoVoronoi is used here.
declare module "d3-geo-voronoi" {
  import type { FeatureCollection, Polygon } from "geojson";
  export function geoVoronoi(points: [number, number][]): { polygons(): FeatureCollection<Polygon> };
}

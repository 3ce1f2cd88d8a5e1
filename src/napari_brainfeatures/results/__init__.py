"""Results kept in a workspace: one folder per result, with provenance, and its exports.

``results/<kind>/<name>-<timestamp>/`` holds ``provenance.json`` (inputs, parameters,
package version, time, machine) beside the payload: JSON numbers, CSV tables, PNG/SVG
figures and maps (zarr arrays that know their scale, units and, for label maps, their
class names and colours).  :func:`~.record.new_result` builds one atomically;
:func:`~.export.export_result` writes what other tools read (OME-Zarr, TIFF, CSV, PNG).
"""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "record": "KINDS Result ResultBuilder list_results new_result open_result",
    "maps": "MapLayer open_map_layer write_map",
    "tables": "area_table mean_activity_table profile_table read_table write_table",
    "kinds": (
        "save_clusters_result save_evaluation_result save_factors_result save_latent_result "
        "save_report_result"
    ),
    "export": "FORMATS export_result",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

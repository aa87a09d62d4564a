"""interp: hooked models, sites, tasks and training; the substrate of `patching` and `probes`."""

from interp.errors import InputError, InterpError, LoadError, SiteError
from interp.interventions import Add, Fn, Replace, Scale
from interp.models import Cache, DeviceError, DtypeError, HookedModel, SiteMap, Tap, load
from interp.sites import Site, grid

__all__ = [
    "Add", "Cache", "DeviceError", "DtypeError", "Fn", "HookedModel", "InputError", "InterpError", "LoadError", "Replace",
    "Scale", "Site", "SiteError", "SiteMap", "Tap", "grid", "load",
]
__version__ = "0.1.0"

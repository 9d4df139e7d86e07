"""Reports: one package for MD rollouts, SPH rollouts and `fastegnn-md validate` (application layer).

==============  ===================================================================================
module          job
==============  ===================================================================================
`.per_jump`     the per-jump table (metrics chosen by name, per predictor) and its summary
`.markdown`     the Markdown renderer every report uses, number formatting
`.plots`        figures without pyplot, saved atomically as PNG; per-jump series
`.files`        the file set of a report: ``<stem>.json``, the plots, ``<stem>.md``
`.md`           the MD rollout report (Kabsch RMSD, MSE, Rg, contacts, RMSF)
`.sph`          the SPH rollout report (MSE per horizon, Sinkhorn divergence, kinetic energy)
==============  ===================================================================================

The validation report lives with the rest of `validate` (`fastegnn_md.adapters.openmm.validate`)
and is written with `.files`, `.markdown` and `.plots`.
"""

from .per_jump import MODEL

__all__ = ["MODEL"]

"""Editable motion: a run's deformation as an armature. ``ssdr`` (the skinning decomposition), ``hierarchy`` (the
bone tree and names), ``skinning`` (linear blend skinning of points and Gaussians), ``fit`` (a run's motion as a
:class:`pla4d.formats.rig.RigData`, with its errors). Import from the modules."""

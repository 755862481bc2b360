"""Front-ends beyond gapbench\x27s own loop: an mmengine hook and a fairseq plug-in, both driving
gapbench methods through the same MaskEnforcer."""

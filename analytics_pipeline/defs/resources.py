"""The settings every asset receives, read once when the code location loads.

The definitions are built from the same object (which models, suites, late window and
partitions exist), so what the UI shows is what the steps run with.
"""

from dagster import Definitions

from analytics_pipeline.settings import PipelineSettings

settings = PipelineSettings()

defs = Definitions(resources={"settings": settings})

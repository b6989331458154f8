"""The models stage: one SQL file per modeled table (``assets/models``), loaded, planned and built.

``loader`` reads a file into a ModelSpec, ``build`` builds one partition through its gates,
``plan`` orders the rebuilds a changed partition causes, ``funnels`` turns
``assets/funnels.yml`` into the ``funnel_steps`` seed table.
"""

"""
OpenLineage for the Crun operators: dataset names, the run facets, and their JSON schemas.

Import it only inside ``get_openlineage_facets_on_*``: it needs
``apache-airflow-providers-openlineage``, which stays optional (the ``openlineage`` extra).
"""

"""Orgdir development tooling, kept out of the runtime ``orgdir`` package and out of every image.

``cli`` (the ``orgdir`` command: the local stack and the catalogue docs),
``localservers`` (RabbitMQ and mongo-java-server as private processes),
``demo`` (the demo municipality, loaded through the four services' APIs),
``testing`` (the pytest plugin), ``testkit``, ``testpeers`` and
``registry_support`` (helpers of tests and benchmarks).
"""

"""Authentication and authorization for every protocol, on twisted.cred.

A protocol turns what its client presents into credentials (Twisted's
``UsernamePassword``, or ``credentials.TokenCredentials`` /
``CertificateCredentials``) and logs in through the Portal that
``realm.build_portal`` makes from the configuration; the avatar it gets is
an ``IFlowMQSession``: the user name and the ``permissions.Permissions``
that it checks each publish, subscription and delivery against. Stored
passwords and tokens may be bcrypt hashes (``passwords``), as in
nats-server configurations; their checks wait in a fair queue per client
address (``fairqueue``), and a secret that matched once is remembered
(``memo``).
"""

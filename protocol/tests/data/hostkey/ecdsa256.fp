256 SHA256:GtRR3KeNK9YHLxMJfwnrTiIqflva7r+5FrM5d2LQp5k ecdsa256@sshr-test (ECDSA)

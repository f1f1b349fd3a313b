3072 SHA256:Ac9oLgzQzUSoH9LHqxImRUzbiXJeeliOcDpHfuOGtxw rsa3072@sshr-test (RSA)

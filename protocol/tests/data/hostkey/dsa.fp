1024 SHA256:p72eYbttf6g9qKH4rledF9Oio5VQECKqAf+0GACSXAg dsa@sshr-test (DSA)

5120 SHA256:HmzylLDiqqaQfZRUU9+uaeg2Cg3YziPSb9zpjNbRjf0 rsa5120@sshr-test (RSA)

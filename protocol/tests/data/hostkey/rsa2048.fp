2048 SHA256:3MYf1oDczinQp4LGZWil8ELmFTA3rlqoF+f/X4Zoilc rsa2048@sshr-test (RSA)

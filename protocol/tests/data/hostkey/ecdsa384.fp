384 SHA256:gHkTRIyRB/42DXRw5dDhxfUkXoE9fK/8+bDfUeoesmw ecdsa384@sshr-test (ECDSA)

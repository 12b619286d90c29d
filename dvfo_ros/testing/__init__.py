"""Test harnesses shipped with the package (fuzzing, reliability runs): tools for checking the
product, not the product.
"""

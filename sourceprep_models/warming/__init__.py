"""warming"""

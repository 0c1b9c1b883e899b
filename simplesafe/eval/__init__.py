"""simplesafe.eval"""

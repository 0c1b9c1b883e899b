"""simplesafe.data"""

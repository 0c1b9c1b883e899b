"""simplesafe.llm"""

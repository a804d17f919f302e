"""Instructions the generate tests use as seed tasks (written for these tests)."""

SEED_INSTRUCTIONS = [
    "Give three tips for keeping a houseplant alive.",
    "Translate the sentence into Spanish.",
    "Classify the sentiment of the review as positive or negative.",
    "Write a limerick about a forgetful cat.",
    "Explain what a prime number is to a child.",
    "Suggest a name for a bakery that sells only bread.",
    "Convert the temperature from Celsius to Fahrenheit.",
    "Summarize the paragraph in one sentence.",
    "Name the largest planet in the solar system.",
]

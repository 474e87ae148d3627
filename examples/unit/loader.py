"""The seed's examples/unit loader: fetches one sample of the read generation.

Waits (up to READ_TIMEOUT, 300 s by default) for the first full generation.
"""

from wirehead import MongoheadDataset

if __name__ == "__main__":
    dataset = MongoheadDataset(config_path="config.yaml")

    idx = [0]
    data = dataset[idx]
    sample, label = data[0]["input"], data[0]["label"]  # "input" is the first SAMPLE kind ("data")
    print(sample.shape, sample.dtype)
    print(label.shape, label.dtype)
    print("Fetched successfully")

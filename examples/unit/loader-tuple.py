"""Upstream's examples/unit tuple loader: one sample of the read generation as a (data, label) tuple."""

from wirehead import MongoTupleheadDataset

if __name__ == "__main__":
    dataset = MongoTupleheadDataset(config_path="config.yaml")

    idx = [0]
    data = dataset[idx][0]
    sample, label = data[0], data[1]
    print(sample.shape)
    print(label.shape)
    print("Fetched successfully")

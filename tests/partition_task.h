// The task where input dependence is necessary (ID-PT and neural recursion tests): 64 common words, each labelled
// " yes" or " no" by a fixed random partition. No fixed prefix can fit it (a shared prompt stays near chance); a
// module that reads the input can.
#pragma once
#include <algorithm>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "eval/evaluate.h"
#include "tasks/task.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"
#include "train/trainer.h"

namespace frozenlm::test {

inline Task word_partition_task(const std::string& dir) {
  const char* words[] = {"cat", "dog", "ball", "tree", "sun", "moon", "car", "boat", "bird", "fish", "cake", "milk", "bed", "box",
                         "hat", "shoe", "book", "door", "girl", "boy", "mom", "dad", "park", "house", "toy", "bear", "duck", "frog",
                         "apple", "flower", "rain", "snow", "star", "sky", "hill", "road", "kite", "doll", "cup", "spoon", "chair",
                         "table", "bike", "train", "bus", "farm", "cow", "pig", "horse", "sheep", "lion", "mouse", "bee", "ant",
                         "king", "queen", "rock", "sand", "sea", "lake", "leaf", "stick", "cookie", "bread"};
  std::vector<int> labels(64);
  for (int i = 0; i < 64; ++i) labels[i] = i % 2;
  std::shuffle(labels.begin(), labels.end(), std::mt19937(11));
  std::string data;
  for (int i = 0; i < 64; ++i) data += nlohmann::json({{"word", words[i]}, {"label", labels[i]}}).dump() + "\n";
  write_file(dir + "/words.jsonl", data);
  write_file(dir + "/task.json", R"({"name": "partition", "type": "classification", "data": {"train": "words.jsonl"},
    "input": "Word: {word}\nAnswer:", "label_field": "label", "verbalizers": {"0": " no", "1": " yes"}, "max_tokens": 32})");
  return load_task(dir + "/task.json");
}

#ifndef FROZENLM_PARTITION_STEPS
#define FROZENLM_PARTITION_STEPS 300
#endif
constexpr int kPartitionSteps = FROZENLM_PARTITION_STEPS;

// Trains `m` on the task (kPartitionSteps steps × 16, lr 0.3, into `out`), checks that the frozen weights did not change, and
// returns its accuracy on the 64 words.
inline double fit_partition(const FrozenLM& lm, const Tokenizer& tok, const Task& task, TrainableModule& m, const std::string& out) {
  const auto ex = task.examples("train");
  TrainOptions o;
  o.steps = kPartitionSteps;
  o.batch_size = 16;
  o.eval_every = 0;
  o.progress = false;
  o.lr = 0.3;
  train_module(lm, m, tok, task, ex, {}, out, o);
  const auto run = read_json(out + "/run.json");
  EXPECT_EQ(run["frozen_weights_hash_before"], run["frozen_weights_hash_after"]);
  EXPECT_EQ(run["module"], m.kind());
  return evaluate(lm, &m, tok, task, ex, EvalOptions{})["score"].get<double>();
}

}  // namespace frozenlm::test

// Tasks, schedules and the training loop: task files for the real data sets load and render; encoding keeps the
// target and cuts the input from the left; schedules have their shapes; training prompt tuning through the harness
// lowers the loss with the frozen weights unchanged and writes its outputs.
#include "core/error.h"
#include "core/loader.h"
#include "eval/evaluate.h"
#include "modules/prompt_tuning.h"
#include "tasks/mixture.h"
#include "tasks/task.h"
#include "test_util.h"
#include "train/trainer.h"
#include "train/trainer_state.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <set>

namespace frozenlm::test {

static std::string task_file(const std::string& name) { return std::string(FROZENLM_SOURCE) + "/tasks/" + name + ".json"; }

TEST(Tasks, EveryShippedTaskFileLoadsAndRenders) {
  for (const std::string name : {"sst2", "agnews", "boolq", "cb", "rte", "copa", "nq_open", "webquestions", "nq_openbook", "lambada"}) {
    Task t = load_task(task_file(name));
    const std::string split = t.splits.count("train") ? "train" : "test";
    ReadOptions ro;
    ro.limit = 20;
    auto ex = t.examples(split, ro);
    ASSERT_FALSE(ex.empty()) << name;
    for (auto& e : ex) {
      if (t.type == TaskType::Classification) {
        EXPECT_GE(e.choices.size(), 2u) << name;
        EXPECT_GE(e.label, 0) << name;
      } else {
        EXPECT_FALSE(e.training_target().empty()) << name;
      }
    }
  }
}

TEST(Tasks, RowRangesSplitOneFileIntoDisjointParts) {
  Task t = load_task(task_file("nq_openbook"));  // one file: rows [0, 624) train, [624, end) test
  auto train = t.examples("train"), test = t.examples("test");
  EXPECT_EQ(train.size(), 624u);
  EXPECT_EQ(test.size(), 200u);
  Records all = read_records(t.splits.at("test"));
  EXPECT_EQ(test.front().input, render_template(t.input, all.rows[624], ""));
  EXPECT_EQ(train.back().input, render_template(t.input, all.rows[623], ""));
  ReadOptions ro;
  ro.limit = 5;  // a limit counts from the range's start
  auto few = t.examples("test", ro);
  ASSERT_EQ(few.size(), 5u);
  EXPECT_EQ(few[0].input, test[0].input);
  const std::string dir = temp_dir("bad-range");
  write_file(dir + "/t.json", R"({"name": "x", "type": "lm", "data": {"train": {"path": "d.jsonl", "rows": [5, 5]}}, "text": "{text}"})");
  try {
    load_task(dir + "/t.json");
    ADD_FAILURE() << "an empty row range was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("data.train.rows: empty range"), std::string::npos) << e.what();
  }
}

TEST(Tasks, EncodingKeepsTheTargetAndCutsTheInputFromTheLeft) {
  auto tok = load_tokenizer_for_model(tinystories(), "");
  EncodedExample e = encode_example(*tok, 1, "Once upon a time there was a cat.", " The end.", 1000);
  EXPECT_FALSE(e.truncated);
  EXPECT_EQ(e.ids.front(), 1);
  std::vector<int64_t> tgt(e.ids.begin() + e.target_start, e.ids.end());
  EXPECT_EQ(tok->decode(e.ids), "Once upon a time there was a cat. The end.");
  EXPECT_EQ(tok->decode(tgt), "The end.");  // the decoder strips the leading space of a text's first token
  EXPECT_EQ(tgt, tok->encode_continuation(" The end."));
  EncodedExample cut = encode_example(*tok, 1, "Once upon a time there was a cat.", " The end.", 6);
  EXPECT_TRUE(cut.truncated);
  EXPECT_EQ(cut.ids.size(), 6u);
  EXPECT_EQ(std::vector<int64_t>(cut.ids.begin() + cut.target_start, cut.ids.end()), tgt);  // target intact
  EXPECT_EQ(cut.ids.front(), 1);                                                               // BOS kept
  // A generation target ends with EOS (kept when the input is cut), so a trained model learns where to stop.
  EncodedExample with_eos = encode_example(*tok, 1, "Once upon a time there was a cat.", " The end.", 7, 2);
  std::vector<int64_t> tgt_eos(with_eos.ids.begin() + with_eos.target_start, with_eos.ids.end());
  ASSERT_EQ(tgt_eos.size(), tgt.size() + 1);
  EXPECT_EQ(tgt_eos.back(), 2);
  EXPECT_EQ(std::vector<int64_t>(tgt_eos.begin(), tgt_eos.end() - 1), tgt);
  EXPECT_EQ(with_eos.ids.size(), 7u);
  // No room for anything after BOS: a clear error, not std::length_error.
  EXPECT_THROW(encode_example(*tok, 1, "x", "y", 1), Error);
}

// Training must read exactly the ids generation will read. tinystories merges '.' with the following space ('.▁'):
// encoding prompt + target as one text would move the prompt's last '.' into the target.
TEST(Tasks, TrainingInputIdsEqualTheGenerationPromptIdsWhenAMergeCrossesTheBoundary) {
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::string prompt = "Once upon a time there was a cat.", target = " The end.";
  // Jointly, '.▁The▁' is one token: the prompt's ids are not a prefix of the joint ids.
  const std::vector<int64_t> joint = tok->encode(prompt + target, false), alone = tok->encode(prompt, false);
  ASSERT_FALSE(joint.size() >= alone.size() && std::equal(alone.begin(), alone.end(), joint.begin())) << "no merge across the boundary to test";
  ASSERT_GE(tok->token_to_id(".\xE2\x96\x81The\xE2\x96\x81"), 0);
  EncodedExample train = encode_example(*tok, 1, prompt, target, 256, 2);
  EncodedExample gen = encode_example(*tok, 1, prompt, "", 256 - 24);  // what evaluation's generation feeds
  EXPECT_EQ(std::vector<int64_t>(train.ids.begin(), train.ids.begin() + train.target_start), gen.ids);
  std::vector<int64_t> want{1};
  for (int64_t id : tok->encode(prompt, false)) want.push_back(id);
  EXPECT_EQ(gen.ids, want);
  // ... and the whole still spells prompt + target (the target continues the prompt, no extra space).
  EXPECT_EQ(tok->decode(std::vector<int64_t>(train.ids.begin(), train.ids.end() - 1)), prompt + target);
  // The same holds for a target without a leading space and for a byte-level tokenizer.
  EncodedExample glued = encode_example(*tok, 1, "The word is cat", "s.", 64);
  EXPECT_EQ(tok->decode(glued.ids), "The word is cats.");
  auto bpe = load_tokenizer(std::string(FROZENLM_SOURCE) + "/testbed/model/tokenizer.json");
  EncodedExample b = encode_example(*bpe, bpe->bos_id(), "Question: capital of Chad?\nAnswer:", " N'Djamena", 64);
  EXPECT_EQ(std::vector<int64_t>(b.ids.begin() + (bpe->bos_id() >= 0), b.ids.begin() + b.target_start),
            bpe->encode("Question: capital of Chad?\nAnswer:", false));
  EXPECT_EQ(bpe->decode(std::vector<int64_t>(b.ids.begin() + b.target_start, b.ids.end())), " N'Djamena");
}

TEST(Tasks, PackedDocumentsStayWholeFillTheirWindowsAndAreDeterministic) {
  std::mt19937_64 rng(3);
  std::vector<EncodedExample> docs;
  int64_t total = 0;
  for (int i = 0; i < 500; ++i) {
    EncodedExample e;
    e.ids.push_back(0);  // BOS
    const int64_t n = 5 + int64_t(rng() % 120) + (i == 7 ? 300 : 0);  // one longer than the window
    for (int64_t k = 0; k < n; ++k) e.ids.push_back(1000 * (i + 1) + k);  // token = document and position
    e.target_start = 1;
    total += std::min<int64_t>(e.ids.size(), 256);
    docs.push_back(e);
  }
  const auto a = pack_documents(docs, 256, 5), b = pack_documents(docs, 256, 5), c = pack_documents(docs, 256, 6);
  ASSERT_EQ(a.size(), b.size());
  for (size_t w = 0; w < a.size(); ++w) EXPECT_EQ(a[w].ids, b[w].ids);
  bool differs = a.size() != c.size();
  for (size_t w = 0; !differs && w < a.size(); ++w) differs = a[w].ids != c[w].ids;
  EXPECT_TRUE(differs) << "another seed packs in another order";
  int64_t packed = 0;
  std::set<int64_t> seen;
  for (auto& w : a) {
    EXPECT_LE(w.ids.size(), 256u);
    EXPECT_EQ(w.target_start, 1);
    EXPECT_EQ(w.ids[0], 0) << "a window opens with a document's BOS";
    packed += int64_t(w.ids.size());
    // Every document inside is whole and contiguous: BOS, then its tokens 0, 1, 2, ... in order.
    for (size_t i = 0; i < w.ids.size();) {
      ASSERT_EQ(w.ids[i], 0);
      const int64_t doc = w.ids[i + 1] / 1000;
      EXPECT_TRUE(seen.insert(doc).second) << "document " << doc << " appears twice";
      size_t k = i + 1;
      while (k < w.ids.size() && w.ids[k] != 0) {
        EXPECT_EQ(w.ids[k], doc * 1000 + int64_t(k - i - 1));
        ++k;
      }
      const size_t len = docs[doc - 1].ids.size();
      EXPECT_EQ(k - i, std::min<size_t>(len, 256)) << "document " << doc << " split";
      i = k;
    }
  }
  EXPECT_EQ(seen.size(), docs.size());
  EXPECT_EQ(packed, total);
  EXPECT_GT(double(packed) / (256.0 * a.size()), 0.95) << "best fit leaves little padding";
  EXPECT_TRUE(std::any_of(a.begin(), a.end(), [](const EncodedExample& w) { return w.truncated; }));
  // The task field: lm only.
  const std::string d = temp_dir("pack-task");
  write_file(d + "/a.jsonl", "{\"q\": \"hi\"}\n");
  EXPECT_TRUE(parse_task(R"({"name": "x", "type": "lm", "data": {"train": "a.jsonl"}, "text": "{q}", "pack": true})", d + "/t.json").pack);
  EXPECT_THROW(parse_task(R"({"name": "x", "type": "generation", "data": {"train": "a.jsonl"}, "input": "{q}", "target": "{q}", "pack": true})", d + "/t.json"), Error);
  EXPECT_THROW(parse_task(R"({"name": "x", "type": "lm", "data": {"train": "a.jsonl"}, "text": "{q}", "pack": 1})", d + "/t.json"), Error);
}

TEST(Tasks, BadTaskFilesAreRefusedWithTheReason) {
  const std::string d = temp_dir("bad-tasks");
  write_file(d + "/t.json", R"({"name": "x", "type": "regression", "data": {"train": "a.jsonl"}})");
  EXPECT_THROW(load_task(d + "/t.json"), Error);
  write_file(d + "/a.jsonl", "{\"q\": \"hi\", \"label\": 1}\n");
  write_file(d + "/u.json", R"({"name": "x", "type": "classification", "data": {"train": "a.jsonl"}, "input": "{question}",
    "label_field": "label", "verbalizers": {"0": " no", "1": " yes"}})");
  try {
    load_task(d + "/u.json").examples("train");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("template field '{question}' is not in the data"), std::string::npos) << e.what();
  }
  write_file(d + "/empty.jsonl", "\n");
  write_file(d + "/e.json", R"({"name": "x", "type": "lm", "data": {"train": "empty.jsonl"}, "text": "{t}"})");
  try {
    load_task(d + "/e.json").examples("train");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no examples"), std::string::npos) << e.what();
  }
  write_file(d + "/s.json", R"({"name": "x", "type": "lm", "data": {"train": "a.jsonl"}, "text": "{q}", "stop": []})");
  try {
    load_task(d + "/s.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'stop' must be a non-empty list"), std::string::npos) << e.what();
  }
  // Wrong JSON types name the task file and the field (not a raw nlohmann message).
  auto refused = [&](const std::string& name, const std::string& body, const std::string& want) {
    write_file(d + "/" + name, body);
    try {
      load_task(d + "/" + name);
      ADD_FAILURE() << name << " was accepted";
    } catch (const Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(d + "/" + name), std::string::npos) << m;
      EXPECT_NE(m.find(want), std::string::npos) << m;
      EXPECT_EQ(m.find("[json.exception"), std::string::npos) << m;
    }
  };
  refused("c.json", R"({"name": "x", "type": "lm", "data": {"train": "a.jsonl"}, "text": "{q}", "columns": "q"})", "'columns' must be a list of strings");
  refused("m.json", R"({"name": "x", "type": "lm", "data": {"train": "a.jsonl"}, "text": "{q}", "max_tokens": "64"})", "'max_tokens' must be an integer");
  refused("v.json", R"({"name": "x", "type": "classification", "data": {"train": "a.jsonl"}, "input": "{q}", "label_field": "label",
    "verbalizers": {"0": 0, "1": " yes"}})", "verbalizers.0 must be a string");
  refused("ch.json", R"({"name": "x", "type": "classification", "data": {"train": "a.jsonl"}, "input": "{q}", "label_field": "label",
    "choices": [" a", 2]})", "'choices' must be a list of strings");
  refused("n.json", R"({"name": 5, "type": "lm", "data": {"train": "a.jsonl"}, "text": "{q}"})", "field 'name' must be a string");
}

// Evaluation with no room for the input: a clear error naming the task, max_tokens and what took the room (it used to
// be a raw std::length_error from a negative resize).
TEST(Tasks, EvaluationWithNoRoomLeftNamesTheTaskAndWhatTookTheRoom) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const std::string d = temp_dir("no-room");
  write_file(d + "/a.jsonl", "{\"q\": \"Who?\", \"a\": \"Lily\"}\n");
  write_file(d + "/t.json", R"({"name": "tight", "type": "generation", "data": {"test": "a.jsonl"}, "input": "Q: {q} A:",
    "target": " {a}", "max_tokens": 64})");
  Task t = load_task(d + "/t.json");
  auto pt = PromptTuning::create(*lm, 40, PromptInit::RandomUniform, {}, 0);
  EvalOptions eo;
  eo.max_new_tokens = 24;
  try {
    evaluate(*lm, pt.get(), *tok, t, t.examples("test"), eo);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    for (const std::string& want : std::vector<std::string>{d + "/t.json", "'tight'", "max_tokens 64", "40 prefix positions", "--max-new-tokens 24"})
      EXPECT_NE(m.find(want), std::string::npos) << "missing '" << want << "' in: " << m;
  }
  eo.max_new_tokens = 8;  // 64 - 40 - 8 = 16 positions: fine
  EXPECT_NO_THROW(evaluate(*lm, pt.get(), *tok, t, t.examples("test"), eo));
}

// trainer_state.json: a round trip keeps every field; a wrong type names the file and the field.
TEST(Training, TrainerStateRoundTripsAndNamesBadFields) {
  TrainerState st;
  st.step = 8; st.epoch = 3; st.batch_pos = 1; st.since_best = 2; st.best = 0.5; st.first_loss = 2.5; st.last_loss = 1.0;
  st.nan_steps = 3; st.consecutive_nan = 1; st.stopped_early = true; st.run = {{"lr", 0.3}, {"steps", 12}};
  st.loss_curve = {{1, 2.5}, {2, 2.0}};
  st.eval_curve = {{2, 0.5}};
  TrainerState back = parse_trainer_state(trainer_state_json(st), "state.json");
  EXPECT_EQ(back.step, 8);
  EXPECT_EQ(back.consecutive_nan, 1);
  EXPECT_TRUE(back.stopped_early);
  EXPECT_EQ(back.best, 0.5);
  EXPECT_EQ(back.run, st.run);
  EXPECT_EQ(back.loss_curve, st.loss_curve);
  st.best = -INFINITY;  // no evaluation yet: stored as null
  EXPECT_EQ(parse_trainer_state(trainer_state_json(st), "s").best, -INFINITY);
  nlohmann::json j = nlohmann::json::parse(trainer_state_json(st));
  for (auto [field, value] : std::vector<std::pair<std::string, nlohmann::json>>{
           {"step", "four"}, {"epoch", -1}, {"stopped_early", 1}, {"loss_curve", {{1}}}, {"run", 5}, {"best", "x"}}) {
    nlohmann::json bad = j;
    bad[field] = value;
    try {
      parse_trainer_state(bad.dump(), "/ck/trainer_state.json");
      ADD_FAILURE() << field << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("/ck/trainer_state.json: field '" + field + "'"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_trainer_state("{\"step\": 1", "s"), Error);
}

// Choices mode: a label is a choice index, its decimal string (TSV), or a string the task maps; anything else is an
// error at the record's file:line (it used to become label 0 through atoll).
TEST(Tasks, StringLabelsNeedAMappingOrAreAnErrorAtTheirLine) {
  const std::string d = temp_dir("string-labels");
  write_file(d + "/a.jsonl", "{\"q\": \"x\", \"l\": 1}\n\n{\"q\": \"y\", \"l\": \"1\"}\n{\"q\": \"z\", \"l\": \"True\"}\n");
  const std::string base = R"({"name": "x", "type": "classification", "data": {"train": "a.jsonl"}, "input": "{q}",
    "label_field": "l", "choices": [" no", " yes"])";
  write_file(d + "/plain.json", base + "}");
  try {
    load_task(d + "/plain.json").examples("train");
    ADD_FAILURE() << "the string label 'True' was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(d + "/a.jsonl:4: label \"True\" is not a choice index"), std::string::npos) << e.what();
  }
  write_file(d + "/mapped.json", base + R"(, "choice_labels": {"True": 1, "False": 0}})");
  auto ex = load_task(d + "/mapped.json").examples("train");
  ASSERT_EQ(ex.size(), 3u);
  EXPECT_EQ(ex[0].label, 1);
  EXPECT_EQ(ex[1].label, 1);  // "1": the decimal form of an index
  EXPECT_EQ(ex[2].label, 1);  // "True" through choice_labels
  write_file(d + "/b.jsonl", "{\"q\": \"x\", \"l\": \"1x\"}\n");
  write_file(d + "/bad.json", R"({"name": "x", "type": "classification", "data": {"train": "b.jsonl"}, "input": "{q}",
    "label_field": "l", "choices": [" no", " yes"]})");
  EXPECT_THROW(load_task(d + "/bad.json").examples("train"), Error);
  write_file(d + "/oob.json", base + R"(, "choice_labels": {"True": 2}})");
  EXPECT_THROW(load_task(d + "/oob.json"), Error);
}

TEST(Training, ScheduleShapes) {
  TrainOptions o;
  o.steps = 110;
  o.warmup = 10;
  EXPECT_DOUBLE_EQ(lr_factor(o, 0), 0.1);
  EXPECT_DOUBLE_EQ(lr_factor(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(o, 60), 1.0);
  o.schedule = "linear";
  EXPECT_NEAR(lr_factor(o, 60), 0.5, 1e-12);
  o.schedule = "cosine";
  EXPECT_NEAR(lr_factor(o, 60), 0.5, 1e-12);
  EXPECT_NEAR(lr_factor(o, 109), 0.5 * (1 + std::cos(M_PI * 0.99)), 1e-12);
}

TEST(Training, PromptTuningThroughTheHarnessLearnsAndLeavesTheLmFrozen) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  Task task = load_task(task_file("sst2"));
  ReadOptions ro;
  ro.limit = 64;
  auto train = task.examples("train", ro);
  auto dev = task.examples("dev", ro);
  auto pt = PromptTuning::create(*lm, 8, PromptInit::SampledVocab, {}, 1);
  TrainOptions o;
  o.steps = 30;
  o.batch_size = 8;
  o.eval_every = 15;
  o.eval_limit = 32;
  o.progress = false;
  const std::string out = temp_dir("harness");
  TrainResult r = train_module(*lm, *pt, *tok, task, train, dev, out, o);
  std::printf("[ learning ] sst2 prompt tuning, 30 steps: loss %.3f -> %.3f, best dev accuracy %.3f\n", r.first_loss, r.last_loss, r.best_score);
  EXPECT_EQ(r.steps_done, 30);
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss);  // the verbaliser tokens are learned quickly
  auto run = read_json(out + "/run.json");
  EXPECT_EQ(run["frozen_weights_hash_before"], run["frozen_weights_hash_after"]);
  for (const char* f : {"/adapter_model.safetensors", "/adapter_config.json", "/metrics.jsonl", "/curve.svg", "/checkpoint/optimizer.pt"})
    EXPECT_TRUE(std::ifstream(out + f).good()) << f;
  EXPECT_NO_THROW(load_module(out, *lm));
}

}  // namespace frozenlm::test



namespace frozenlm::test {

// --snapshot-every keeps the module as it was at each multiple of N (not the best, not the last): the step-3 snapshot
// of a 6-step run equals the output of a 3-step run with the same seed (constant schedule: the same trajectory), the
// step-6 one equals the 6-step run's output, and they differ (training moved the prompt).
TEST(Training, SnapshotsKeepTheModuleAsItWasAtTheirStep) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  Task task = load_task(task_file("sst2"));
  ReadOptions ro;
  ro.limit = 32;
  auto train = task.examples("train", ro);
  auto run = [&](int64_t steps, int64_t snapshot_every, const std::string& name) {
    auto pt = PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 7);
    TrainOptions o;
    o.steps = steps;
    o.batch_size = 4;
    o.eval_every = 0;
    o.snapshot_every = snapshot_every;
    o.progress = false;
    const std::string out = temp_dir(name);
    train_module(*lm, *pt, *tok, task, train, {}, out, o);
    return out;
  };
  const std::string six = run(6, 3, "snapshots-6"), three = run(3, 0, "snapshots-3");
  auto prompt_of = [&](const std::string& dir) { return PromptTuning::load(dir, *lm)->prompt().detach().clone(); };
  const at::Tensor s3 = prompt_of(six + "/snapshots/step-00000003"), s6 = prompt_of(six + "/snapshots/step-00000006");
  EXPECT_TRUE(at::equal(s3, prompt_of(three))) << "step-3 snapshot differs from a 3-step run";
  EXPECT_TRUE(at::equal(s6, prompt_of(six))) << "step-6 snapshot differs from the run's output";
  EXPECT_GT((s6 - s3).abs().max().item<double>(), 0.0);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(six + "/snapshots")) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000003", "step-00000006"}));
  EXPECT_FALSE(std::filesystem::exists(three + "/snapshots"));
}

TEST(Mixtures, ExamplesProportionalWithCapAndDeterministic) {
  Mixture m = load_mixture(task_file("classification_mix"));
  ASSERT_EQ(m.tasks.size(), 6u);
  auto a = mix_examples(m, "train"), b = mix_examples(m, "train");
  std::map<size_t, size_t> per_task;
  for (auto& x : a) ++per_task[x.task];
  // sst2 and agnews are capped at 2000; the FewGLUE sets have 32 (BoolQ, RTE, COPA: 32; CB: 32).
  EXPECT_EQ(per_task[0], 2000u);
  EXPECT_EQ(per_task[1], 2000u);
  for (size_t t = 2; t < 6; ++t) EXPECT_EQ(per_task[t], 32u) << m.tasks[t].name;
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i].example.input, b[i].example.input);  // same seed, same order
  // Mixed, not concatenated: the first 100 draw from more than one task.
  std::set<size_t> first;
  for (size_t i = 0; i < 100; ++i) first.insert(a[i].task);
  EXPECT_GE(first.size(), 2u);
}

TEST(Mixtures, UnknownTaskIsNamed) {
  const std::string d = temp_dir("bad-mix");
  write_file(d + "/m.json", R"({"name": "m", "tasks": ["nope.json"]})");
  try {
    load_mixture(d + "/m.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("task 'nope.json'"), std::string::npos) << e.what();
  }
}

}  // namespace frozenlm::test

namespace frozenlm::test {

// A prompt-tuning module whose output turns NaN on chosen training calls (forward passes with grad enabled).
class PoisonedPrompt : public TrainableModule {
 public:
  PoisonedPrompt(std::unique_ptr<PromptTuning> pt, int64_t from, int64_t to) : pt_(std::move(pt)), from_(from), to_(to) {}
  std::string kind() const override { return pt_->kind(); }
  ModuleInput apply(const FrozenLM& lm, const ModuleInput& in) const override {
    ModuleInput out = pt_->apply(lm, in);
    if (at::GradMode::is_enabled() && ++calls_ >= from_ && calls_ <= to_) out.embeds = out.embeds * std::nan("");
    return out;
  }
  int64_t prefix_length() const override { return pt_->prefix_length(); }
  std::vector<at::Tensor> parameters() const override { return pt_->parameters(); }
  void save(const std::string& dir) const override { pt_->save(dir); }

 private:
  std::unique_ptr<PromptTuning> pt_;
  int64_t from_, to_;
  mutable int64_t calls_ = 0;
};

TEST(Training, NanLossesAreSkippedCountedAndStopTrainingWhenTheyPersist) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  Task task = load_task(task_file("sst2"));
  ReadOptions ro;
  ro.limit = 32;
  auto train = task.examples("train", ro);
  TrainOptions o;
  o.steps = 10;
  o.batch_size = 4;
  o.eval_every = 0;
  o.checkpoint_every = 2;
  o.max_nan_steps = 3;
  o.progress = false;
  {  // two poisoned steps (4 and 5): skipped and counted, training goes on with finite parameters
    PoisonedPrompt m(PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 1), 4, 5);
    TrainResult r = train_module(*lm, m, *tok, task, train, {}, temp_dir("nan-transient"), o);
    EXPECT_EQ(r.steps_done, 10);
    EXPECT_EQ(r.nan_steps, 2);
    EXPECT_FALSE(r.stopped_early);
    EXPECT_TRUE(std::isfinite(r.last_loss));
    EXPECT_TRUE(m.parameters()[0].isfinite().all().item<bool>());
  }
  {  // NaN from step 6 on: stops after 3 in a row; the step-4 checkpoint is intact and finite
    PoisonedPrompt m(PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 1), 6, 1000);
    const std::string out = temp_dir("nan-persistent");
    TrainResult r = train_module(*lm, m, *tok, task, train, {}, out, o);
    EXPECT_TRUE(r.stopped_early);
    EXPECT_EQ(r.nan_steps, 3);
    auto st = read_json(out + "/checkpoint/trainer_state.json");
    EXPECT_EQ(st["step"], 4);
    auto saved = load_module(out + "/checkpoint", *lm);
    EXPECT_TRUE(saved->parameters()[0].isfinite().all().item<bool>());
    EXPECT_EQ(read_json(out + "/run.json")["nan_steps"], 3);
  }
}

}  // namespace frozenlm::test

namespace frozenlm::test {

TEST(Training, AMixtureTrainsWithPerTaskLengthsAndPerTaskDevScores) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  Mixture m = load_mixture(task_file("classification_mix"));
  ReadOptions ro;
  ro.limit = 16;
  TrainingSet set;
  set.name = m.name;
  for (const char* name : {"sst2", "agnews"}) {
    for (auto& t : m.tasks)
      if (t.name == name) set.tasks.push_back(t);
  }
  ASSERT_EQ(set.tasks.size(), 2u);
  set.tasks[1].max_tokens = 24;  // AG News inputs are long: they must be cut to this task's own limit
  for (size_t t = 0; t < 2; ++t) {
    for (auto& e : set.tasks[t].examples("train", ro)) set.train.push_back({t, e});
    set.dev.push_back(set.tasks[t].examples(t == 0 ? "dev" : "test", ro));
  }
  auto pt = PromptTuning::create(*lm, 4, PromptInit::SampledVocab, {}, 1);
  TrainOptions o;
  o.steps = 4;
  o.batch_size = 8;
  o.eval_every = 2;
  o.eval_limit = 8;
  o.progress = false;
  const std::string out = temp_dir("mixture-train");
  testing::internal::CaptureStderr();
  train_module(*lm, *pt, *tok, set, out, o);
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_NE(log.find("agnews: 16 training inputs truncated to 20 tokens"), std::string::npos) << log;
  std::ifstream mf(out + "/metrics.jsonl");
  std::string line;
  int evals = 0;
  while (std::getline(mf, line)) {
    auto j = nlohmann::json::parse(line);
    if (!j.contains("eval_score")) continue;
    ++evals;
    EXPECT_EQ(j["eval_metric"], "mean_task_score");
    const double a = j["task_scores"]["sst2"], b = j["task_scores"]["agnews"];
    EXPECT_NEAR(j["eval_score"].get<double>(), (a + b) / 2, 1e-12);
  }
  EXPECT_EQ(evals, 2);
  EXPECT_EQ(read_json(out + "/run.json")["tasks"], nlohmann::json({"sst2", "agnews"}));
}

}  // namespace frozenlm::test

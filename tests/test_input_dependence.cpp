// The paper's case for input dependence, on a task built so that it is necessary (partition_task.h): an arbitrary
// yes/no partition of 64 words. One shared soft prompt cannot make the frozen LM compute it; the two modules that read
// the input — ID-PT (a generator writes the prompt from the input) and neural recursion (a connector maps pass-1
// output vectors to pass-2 inputs) — can, with the same steps, batch and learning rate. The shared prompt is fitted
// once and both modules are compared against it (one test: the fit is the expensive part).
#include "core/loader.h"
#include "modules/idpt.h"
#include "modules/neural_recursion.h"
#include "modules/prompt_tuning.h"
#include "partition_task.h"
#include "test_util.h"

namespace frozenlm::test {

TEST(InputDependence, OneSharedPromptCannotFitAnArbitraryPartitionIdPtAndNeuralRecursionCan) {
  auto lm = load_model(tinystories());
  auto tok = load_tokenizer_for_model(tinystories(), "");
  const Task task = word_partition_task(temp_dir("partition-task"));
  auto pt = PromptTuning::create(*lm, 8, PromptInit::SampledVocab, {}, 1);
  const double a_pt = fit_partition(*lm, *tok, task, *pt, temp_dir("partition-pt"));

  IdptConfig ic;
  ic.prompt_tokens = 8;
  ic.dim = 64;
  ic.generator_lr_scale = 0.01;
  auto id = IdPromptTuning::create(*lm, ic);
  const double a_id = fit_partition(*lm, *tok, task, *id, temp_dir("partition-idpt"));

  RecursionConfig rc;
  rc.pass1_prompt = 4;
  rc.pass2_prompt = 8;
  rc.dim = 64;
  rc.connector_lr_scale = 0.01;
  auto nr = NeuralRecursion::create(*lm, rc);
  const double a_nr = fit_partition(*lm, *tok, task, *nr, temp_dir("partition-nr"));

  std::printf("[ learning ] arbitrary partition of 64 words, %d steps each: shared prompt %.3f, ID-PT %.3f, neural recursion %.3f (chance 0.5)\n",
              kPartitionSteps, a_pt, a_id, a_nr);
  EXPECT_LE(a_pt, 0.80);
  EXPECT_GE(a_id, 0.95);
  EXPECT_GE(a_nr, 0.95);
}

}  // namespace frozenlm::test

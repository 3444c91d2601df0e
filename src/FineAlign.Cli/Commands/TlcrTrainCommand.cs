using FineAlign.Data.Corpus;
using System.Globalization;
using FineAlign.Models;
using FineAlign.Rewards;
using FineAlign.Trainers;
using FineAlign.Training;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign tlcr-train</c>: the TLCR token discriminator (2-way token head on an LM trunk), TLCR step 2.</summary>
public static class TlcrTrainCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("tlcr-train",
            "TLCR step 2: train a token discriminator (2-label token-classification head on the --model trunk, e.g. the SFT policy) " +
            "on tlcr-label output with soft-target cross-entropy (neutral tokens target 0.5). Reports token accuracy / F1 over " +
            "labelled tokens. Without --data it labels the built-in corpus's revision pairs itself.");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/tlcr", defaultLr: 1e-3, defaultMaxSteps: 200);
        var data = cmd.Declare<string?>("--data", null, "Labelled JSONL from tlcr-label. Omitted: built-in corpus pairs.");
        var evalData = cmd.Declare<string?>("--eval-data", null, "Labelled JSONL for evaluation (built-in corpus: its held-out prompts).");
        var corpus = CorpusFlags.Declare(cmd, "Reviews used from the built-in corpus.", 4000, 10);
        var corpusSize = corpus.Size;
        var corpusSeed = corpus.Seed;
        var neutralWeight = cmd.Declare("--neutral-weight", 1.0, "Loss weight of neutral tokens (target 0.5); 1 = the paper, 0 = labelled tokens only.",
            check: v => v is >= 0 and <= 1 ? null : "must be in [0, 1]");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            var (trunk, tokenizer, description) = flags.LoadOrCreateModel(r);
            using var disc = new ScoredLM(trunk, HeadKind.Token, 2, r.Get(flags.Seed));
            List<LabelledResponse> train, eval;
            if (r.Get(data) is string path)
            {
                train = TlcrLabeller.ReadLabelled(path, trunk.Config.VocabSize);
                eval = r.Get(evalData) is string ep ? TlcrLabeller.ReadLabelled(ep, trunk.Config.VocabSize) : [];
            }
            else
            {
                var pairs = BuiltinData.RevisionPairs(r.Get(corpusSeed), r.Get(corpusSize));
                train = TlcrLabeller.Label(tokenizer, pairs.Where(p => !p.IsEval)).ToList();
                eval = TlcrLabeller.Label(tokenizer, pairs.Where(p => p.IsEval)).ToList();
            }
            int vocab = trunk.Config.VocabSize;
            var badId = train.Concat(eval).SelectMany(x => x.ResponseIds).FirstOrDefault(id => id < 0 || id >= vocab, -1);
            if (badId != -1) throw new FineAlignException($"labelled data holds token id {badId}, outside the model's vocabulary of {vocab}; label with the model's tokenizer");
            int context = trunk.Config.MaxPositionEmbeddings;
            var trainEx = TlcrTrainer.FitContext(train.Select(x => TlcrTrainer.Encode(tokenizer, x)).ToList(), context, out int cutTrain);
            var evalEx = TlcrTrainer.FitContext(eval.Select(x => TlcrTrainer.Encode(tokenizer, x)).ToList(), context, out int cutEval);
            if (cutTrain + cutEval > 0)
                r.Error.WriteLine($"warning: {cutTrain} training and {cutEval} eval responses were longer than the model's context ({context} tokens) and were cut at the end (their labels too)");
            r.Out.WriteLine($"tlcr-train: discriminator on {description}; {trainEx.Count} training / {evalEx.Count} eval responses, output {options.OutputDir}");
            var result = CliProgress.Run(r.Out, progress => TlcrTrainer.Train(disc, tokenizer, trainEx, evalEx, options, progress, ct, r.Get(neutralWeight)));
            if (!result.Completed || ct.IsCancellationRequested)
            {
                r.Out.WriteLine($"tlcr-train: stopped at step {result.GlobalStep}; checkpoint {result.LastCheckpoint}. Continue with --resume.");
                return 130;
            }
            var inv = CultureInfo.InvariantCulture;
            var m = TlcrTrainer.Evaluate(disc, evalEx.Count > 0 ? evalEx : trainEx, tokenizer.PaddingId, options.PerDeviceEvalBatchSize);
            string split = evalEx.Count > 0 ? "eval" : "train";
            File.WriteAllText(Path.Combine(options.OutputDir, "token_metrics.json"), string.Create(inv,
                $"{{\"split\": \"{split}\", \"token_accuracy\": {m.Accuracy:R}, \"token_f1\": {m.F1:R}, \"majority_baseline\": {m.MajorityBaseline:R}, \"labelled_tokens\": {m.LabelledTokens}, \"loss\": {m.Loss:R}}}\n"));
            r.Out.WriteLine(string.Create(inv,
                $"tlcr-train: {split} token accuracy {m.Accuracy:F4} (majority baseline {m.MajorityBaseline:F4}), F1 {m.F1:F4} over {m.LabelledTokens} labelled tokens"));
            r.Out.WriteLine($"tlcr-train: discriminator saved to {Path.Combine(options.OutputDir, TlcrTrainer.ModelFolder)}; use it as --reward tlcr:{Path.Combine(options.OutputDir, TlcrTrainer.ModelFolder)}");
            return 0;
        });
        return cmd;
    }
}

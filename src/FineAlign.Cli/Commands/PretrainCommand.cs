using FineAlign.Text;
using FineAlign.Data;
using FineAlign.Data.Corpus;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign pretrain</c>: causal-LM training on plain text, every token a target.</summary>
public static class PretrainCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("pretrain",
            "Causal language-model training on plain text (every token is a target), packed into context-length blocks. " +
            "Text from a .txt file (documents separated by blank lines) or JSONL with a 'text' field; without --data, the " +
            "built-in review corpus. Without --model it builds a fresh model (--init preset, byte tokenizer): no downloads needed.");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/pretrain", defaultLr: 1e-3, defaultMaxSteps: 600);
        var data = cmd.Declare<string?>("--data", null, "Training text (.txt or .jsonl with 'text'). Omitted: the built-in corpus.");
        var evalData = cmd.Declare<string?>("--eval-data", null, "Evaluation text in the same format (built-in corpus: its held-out part).");
        var corpus = CorpusFlags.Declare(cmd, "Reviews generated when using the built-in corpus.", 20000, 10);
        var corpusSize = corpus.Size;
        var corpusSeed = corpus.Seed;
        var samples = cmd.Declare("--samples", 4, "Sample generations written after training (samples.jsonl).", check: v => v >= 0 ? null : "must be ≥ 0");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            OutputCheck.Folder(options.OutputDir, "--out");
            var (model, tokenizer, description) = flags.LoadOrCreateModel(r);
            using var _ = model;
            OutputCheck.DiskSpace(options.OutputDir, model.parameters().Sum(p => p.numel()), options.SaveTotalLimit, "--out");
            int context = model.Config.MaxPositionEmbeddings;

            List<TokenizedExample> train, eval;
            List<string> prompts;
            if (r.Get(data) is string path)
            {
                train = PretrainCorpus.LoadBlocks(path, tokenizer, context);
                eval = r.Get(evalData) is string ep ? PretrainCorpus.LoadBlocks(ep, tokenizer, context) : [];
                prompts = PretrainCorpus.ReadDocuments(r.Get(evalData) ?? path).Take(r.Get(samples))
                    .Select(d => string.Join(' ', d.Split(' ').Take(4))).ToList();
            }
            else
            {
                (train, eval) = BuiltinData.PretrainBlocks(tokenizer, r.Get(corpusSeed), r.Get(corpusSize), context);
                prompts = ReviewCorpus.Prompts(r.Get(corpusSeed), r.Get(samples)).Eval.Take(r.Get(samples)).ToList();
            }
            if (train.Count == 0)
                throw new FineAlignException($"the training text is shorter than one block of {context} tokens; add text or lower --context-length.");

            r.Out.WriteLine($"pretrain: {description}");
            r.Out.WriteLine($"pretrain: {train.Count} training / {eval.Count} eval blocks of {context} tokens, output {options.OutputDir}");
            var result = CliProgress.Run(r.Out, progress => CausalLmTrainer.Train(model, tokenizer, train, eval, options, progress, ct));
            return TrainingReport.Finish(r, "pretrain", result, options, model, tokenizer, prompts, r.Get(data) is null, ct);
        });
        return cmd;
    }
}

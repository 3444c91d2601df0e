using System.CommandLine;
using System.Globalization;
using FineAlign.Data.Corpus;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign corpus</c>: writes the built-in synthetic review corpus. The pattern every command follows:
/// declare options once, then read merged values from the <see cref="Recipe"/>.</summary>
public static class CorpusCommand
{
    public static Command Create()
    {
        var cmd = new RecipeCommand("corpus",
            "Write the built-in synthetic movie-review corpus (known word valences) to a folder: pretrain.txt, " +
            "sft_train/eval.jsonl, prompts_train/eval.jsonl, preferences_train/eval.jsonl and reviews.jsonl (labels). " +
            "Same seed => byte-identical files.");
        var outDir = cmd.Declare("--out", "data/corpus", "Output folder (created; files of the same names are replaced).", alias: "-o");
        var seed = cmd.Declare("--seed", ReviewCorpus.DefaultSeed, "Random seed; the corpus is a pure function of seed and count.");
        var count = cmd.Declare("--count", 20000, "Number of reviews to generate.",
            check: v => v is >= 1 and <= 10_000_000 ? null : "must be between 1 and 10000000");
        var evalFraction = cmd.Declare("--eval-fraction", 0.1, "Fraction of distinct prompts held out for evaluation (their reviews go to the eval splits).",
            check: v => v is >= 0 and <= 1 ? null : "must be between 0 and 1");

        cmd.SetRecipeAction((recipe, ct) =>
        {
            string dir = recipe.Get(outDir);
            var summary = OutputFolder.Write(dir, temp => CliProgress.Run(recipe.Out, progress =>
                CorpusExport.WriteAll(temp, recipe.Get(seed), recipe.Get(count), recipe.Get(evalFraction), progress, ct)));
            recipe.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"wrote {summary.Reviews} reviews to {dir}: sft {summary.SftTrain} train / {summary.SftEval} eval, " +
                $"prompts {summary.PromptsTrain} train / {summary.PromptsEval} eval, {summary.Preferences} preference pairs"));
            return 0;
        });
        return cmd;
    }
}

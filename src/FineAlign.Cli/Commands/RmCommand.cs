using FineAlign.Models;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign rm</c>: a sequence reward model trained on preference pairs (Bradley–Terry) or, with
/// <c>--objective classification</c>, on labelled single texts (a classifier whose score is the log-odds of the label).</summary>
public static class RmCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("rm",
            "Train a sequence reward model: the LM trunk plus a scalar head read at the last real token, Bradley–Terry loss " +
            "−log σ(r_chosen − r_rejected − margin). Saved as a Hugging Face XForSequenceClassification folder in <out>/model " +
            "(score it with eval-rm or use it as a PPO reward). --objective classification trains on labelled single texts instead " +
            "(prompt + completion + boolean label, the KTO/BCO layout): −[y log σ(r) + (1−y) log σ(−r)], so r is the log-odds of a true label, " +
            "as a sentiment classifier's logit. Without --data: the built-in review pairs; without --model: a fresh model.");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/rm", defaultLr: 1e-3, defaultMaxSteps: 300);
        var objective = cmd.Declare("--objective", "pairwise", "pairwise (Bradley–Terry on preference pairs) or classification (labelled single texts: " +
            "prompt + completion + label).", check: v => v is "pairwise" or "classification" ? null : "must be pairwise or classification");
        var data = PreferenceFlags.Declare(cmd, feedback: false);
        var center = cmd.Declare("--center-rewards-coefficient", 0.0, "c in c·(r_chosen + r_rejected)² (reward centring, TRL; e.g. 0.01); 0 = off.",
            check: v => v >= 0 ? null : "must be ≥ 0");
        var useMargins = cmd.Declare("--use-margins", true, "Subtract a pair's 'margin' (or score_chosen − score_rejected) field inside the sigmoid.");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            var (trunk, tokenizer, description) = flags.LoadOrCreateModel(r);
            using var model = new ScoredLM(trunk, HeadKind.Sequence, 1, options.Seed);
            if (r.Get(objective) == "classification")
            {
                var (ftrain, feval) = data.LoadFeedback(r, tokenizer, trunk.Config.MaxPositionEmbeddings, flags.TemplateFolder(r));
                r.Out.WriteLine($"rm: {description} + scalar head, classification objective");
                r.Out.WriteLine($"rm: {PreferenceFlags.Describe(ftrain)} for training, {(feval is null ? "no eval set" : feval.Examples.Count + " held out")}, output {options.OutputDir}");
                var fresult = CliProgress.Run(r.Out, progress => RewardModelTrainer.TrainClassifier(model, tokenizer, ftrain, feval, options, progress, ct));
                return PreferenceReport.Finish(r, "rm", fresult, options,
                    $"reward model saved to {Path.Combine(options.OutputDir, CausalLmTrainer.ModelFolder)} (Hugging Face sequence classification)",
                    "accuracy", "rewards/positive", "rewards/negative");
            }
            var (train, eval) = data.LoadPairs(r, tokenizer, trunk.Config.MaxPositionEmbeddings, flags.TemplateFolder(r));
            r.Out.WriteLine($"rm: {description} + scalar head");
            r.Out.WriteLine($"rm: {PreferenceFlags.Describe(train)} for training, {(eval is null ? "no eval set" : eval.Pairs.Count + " held out")}, output {options.OutputDir}");
            var result = CliProgress.Run(r.Out, progress => RewardModelTrainer.Train(model, tokenizer, train, eval, options,
                new RewardModelOptions { CenterRewardsCoefficient = r.Get(center), UseMargins = r.Get(useMargins) }, progress, ct));
            return PreferenceReport.Finish(r, "rm", result, options,
                $"reward model saved to {Path.Combine(options.OutputDir, CausalLmTrainer.ModelFolder)} (Hugging Face sequence classification)",
                "accuracy", "margin", "rewards/chosen", "rewards/rejected");
        });
        return cmd;
    }
}

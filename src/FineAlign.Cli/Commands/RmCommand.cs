using FineAlign.Models;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign rm</c>: a sequence reward model trained on preference pairs (Bradley–Terry).</summary>
public static class RmCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("rm",
            "Train a sequence reward model: the LM trunk plus a scalar head read at the last real token, Bradley–Terry loss " +
            "−log σ(r_chosen − r_rejected − margin). Saved as a Hugging Face XForSequenceClassification folder in <out>/model " +
            "(score it with eval-rm or use it as a PPO reward). Without --data: the built-in review pairs; without --model: a fresh model.");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/rm", defaultLr: 1e-3, defaultMaxSteps: 300);
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

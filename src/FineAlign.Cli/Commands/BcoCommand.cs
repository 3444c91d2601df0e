using FineAlign.Objectives;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign bco</c>: Binary Classifier Optimization on thumbs-up/down data.</summary>
public static class BcoCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("bco",
            "Binary Classifier Optimization on unpaired binary feedback, from --model (an SFT output): logit β·log-ratio − δ, with the reward " +
            "shift δ a running mean saved in every checkpoint (bco_reward_shift.json) and restored on resume. --udm weights thumbs-down " +
            "examples by a logistic-regression density ratio on prompt embeddings. Without --data: the built-in review pairs, unpaired.");
        var flags = TrainingFlags.Declare(cmd, defaultOut: "runs/bco", defaultLr: 1e-4, defaultMaxSteps: 200);
        var data = PreferenceFlags.Declare(cmd, feedback: true);
        var refModel = cmd.Declare<string?>("--ref-model", null, "Reference model folder (default: a frozen copy of --model).");
        var beta = cmd.Declare("--beta", BcoLoss.DefaultBeta, "β.", check: v => v > 0 ? null : "must be positive");
        var udm = cmd.Declare("--udm", false, "Underlying distribution matching: weight thumbs-down losses by clamp(p/(1−p), 0.5, 10) from a prompt classifier.");
        var udmPerSide = cmd.Declare("--udm-max-per-side", Udm.DefaultMaxPerSide, "Prompts per side used to fit the UDM classifier.", check: v => v >= 1 ? null : "must be at least 1");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            var options = flags.Build(r);
            var (policy, tokenizer, description) = PreferenceFlags.RequirePolicy(r, flags, "bco");
            using var _ = policy;
            var (train, eval) = data.LoadFeedback(r, tokenizer, policy.Config.MaxPositionEmbeddings, flags.TemplateFolder(r));
            var reference = PreferenceFlags.LoadReference(r.Get(refModel), policy);
            r.Out.WriteLine($"bco: {description}; reference: {r.Get(refModel) ?? "the initial policy"}; β {r.Get(beta)}{(r.Get(udm) ? ", UDM weights" : "")}");
            r.Out.WriteLine($"bco: {PreferenceFlags.Describe(train)} for training, {(eval is null ? "no eval set" : eval.Examples.Count + " held out")}, output {options.OutputDir}");
            var bco = new BcoOptions { Beta = r.Get(beta), Udm = r.Get(udm), UdmMaxPerSide = r.Get(udmPerSide) };
            var (result, shift) = CliProgress.Run(r.Out, progress => BcoTrainer.Train(policy, reference, tokenizer, train, eval, options, bco, progress,
                m => r.Out.WriteLine("bco: " + m), ct));
            int code = PreferenceReport.Finish(r, "bco", result, options,
                $"model saved to {Path.Combine(options.OutputDir, CausalLmTrainer.ModelFolder)} (Hugging Face format), δ = {shift.Mean:F4} in {RewardShift.FileName}",
                "delta", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected");
            return code;
        });
        return cmd;
    }
}

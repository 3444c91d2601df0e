using FineAlign.Evaluation;
using FineAlign.Trainers;

namespace FineAlign.Cli.Commands;

/// <summary><c>finealign ppo-compare</c>: the proof table — four reward variants from one policy, same budget.</summary>
public static class PpoCompareCommand
{
    public static RecipeCommand Create()
    {
        var cmd = new RecipeCommand("ppo-compare",
            "Runs PPO from one policy with (a) a sequence reward, (b) TLCR continuous token rewards, (c) discrete ±1 token rewards and " +
            "(d) pivot-token segment rewards, same seed and budget, then measures held-out true sentiment, KL to the initial policy, " +
            "distinct-1/2 and length. Writes comparison.md, comparison.json and comparison.png.");
        var disc = cmd.Declare("--discriminator", "runs/tlcr/model", "TLCR discriminator folder (finealign tlcr-train) for variants b-d.");
        var seqReward = cmd.Declare("--sequence-reward", "lexicon", "Reward spec of variant (a): 'lexicon' (ground-truth sequence score) or rm:PATH.");
        var variants = cmd.Declare<string[]>("--variants", ["sequence", "tlcr", "discrete", "pivot"], "Which variants to run.");
        var evalPrompts = cmd.Declare("--eval-prompts", 64, "Held-out prompts for the final evaluation.", check: v => v >= 1 ? null : "must be at least 1");
        var flags = OnlineRlFlags.Declare(cmd, OnlineRlOptions.Ppo, defaultSteps: 25, defaultOut: "runs/ppo-compare");

        cmd.SetRecipeAction((r, ct) =>
        {
            flags.ApplyThreads(r);
            if (r.Get(flags.Rollout.Endpoints).Length > 0) throw new FineAlignException("ppo-compare generates in-process; --rollout-endpoint is for ppo, grpo and rloo");
            var (train, heldOut, corpus) = flags.LoadPrompts(r);
            if (!corpus) throw new FineAlignException("ppo-compare measures true sentiment and needs the built-in corpus prompts; omit --prompts");
            var chosen = PpoComparison.Variants(r.Get(variants), r.Get(seqReward), r.Get(disc));
            var options = flags.Options(r);
            var setup = new PpoComparisonSetup(train, heldOut.Take(r.Get(evalPrompts)).ToList(), options, r.Get(flags.MaxNewTokens),
                r.Get(flags.Seed) + Seeds.HeldOutEvalOffset);
            var result = CliProgress.Run(r.Out, progress => PpoComparison.Run(setup, chosen, () => flags.LoadModels(r, options),
                (tokenizer, spec) => flags.Reward.Build(r, tokenizer, [spec]), progress, r.Out.WriteLine, ct,
                promptColumns: source => flags.PromptColumns(r, source)));
            string root = r.Get(flags.Output.Out);
            r.Out.Write(PpoComparison.Write(result, root));
            r.Out.WriteLine($"ppo-compare: table → {Path.Combine(root, "comparison.md")}, plot → {Path.Combine(root, "comparison.png")}");
            return 0;
        });
        return cmd;
    }
}

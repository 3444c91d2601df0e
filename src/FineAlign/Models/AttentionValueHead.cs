using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace FineAlign.Models;

/// <summary>
/// A-LoL's value estimate V_ref(x) from a frozen model's last-layer prompt states (Baheti et al., ICLR 2024; code
/// abaheti95/LoL-RL, <c>ValueHeadAttention</c>): one learned query attends over the prompt's hidden states with
/// multi-head attention (8 heads, or the largest count ≤ 8 dividing the width), then an MLP (the reference code's
/// <c>ValueHeadMLP</c> summary: Linear, ReLU, dropout, Linear) gives one number, squashed by a sigmoid into the reward
/// range [<see cref="Low"/>, <see cref="High"/>] (the paper: sigmoid × max_value for rewards in [0, 1]).
/// Unlike the reference code, padding is masked out of the attention.
/// </summary>
public sealed class AttentionValueHead : nn.Module<Tensor, Tensor, Tensor>
{
    private readonly Parameter query;
    private readonly Linear wq, wk, wv, wo, hidden, output;
    private readonly Dropout dropout;
    private readonly int heads;

    public AttentionValueHead(int width, double low, double high, long seed, double dropoutProbability = 0.1) : base(nameof(AttentionValueHead))
    {
        if (!(high > low)) throw new FineAlignException($"value range [{low}, {high}] is empty");
        Low = low; High = high;
        heads = Enumerable.Range(1, 8).Reverse().First(h => width % h == 0);
        using (var g = new torch.Generator((ulong)seed))
        {
            query = nn.Parameter(randn(width, generator: g) / Math.Sqrt(width));
            wq = nn.Linear(width, width); wk = nn.Linear(width, width); wv = nn.Linear(width, width); wo = nn.Linear(width, width);
            hidden = nn.Linear(width, width); output = nn.Linear(width, 1);
            using var noGrad = no_grad();
            foreach (var (_, p) in new[] { wq, wk, wv, wo, hidden, output }.SelectMany(l => l.named_parameters()))
            {
                if (p.dim() == 2) p.uniform_(-1 / Math.Sqrt(width), 1 / Math.Sqrt(width), generator: g);
                else p.zero_();
            }
        }
        dropout = nn.Dropout(dropoutProbability);
        RegisterComponents();
    }

    /// <summary>The reward range the output is squashed into.</summary>
    public double Low { get; }
    public double High { get; }

    /// <param name="states">[B, T, H] hidden states of the prompt (float32).</param>
    /// <param name="mask">[B, T] attention mask (1 = prompt token, 0 = padding).</param>
    /// <returns>[B] values in (Low, High).</returns>
    public override Tensor forward(Tensor states, Tensor mask)
    {
        using var scope = NewDisposeScope();
        long b = states.shape[0], t = states.shape[1], h = states.shape[2], d = h / heads;
        var x = dropout.forward(states.to(float32));
        var q = wq.forward(query.unsqueeze(0)).view(1, heads, 1, d);               // [1, nh, 1, d]
        var k = wk.forward(x).view(b, t, heads, d).transpose(1, 2);                 // [B, nh, T, d]
        var v = wv.forward(x).view(b, t, heads, d).transpose(1, 2);
        var scores = q.matmul(k.transpose(-2, -1)) / Math.Sqrt(d);                  // [B, nh, 1, T]
        var pad = mask.eq(0).view(b, 1, 1, t);
        var attn = nn.functional.softmax(scores.masked_fill(pad, float.NegativeInfinity), -1);
        var pooled = wo.forward(attn.matmul(v).transpose(1, 2).reshape(b, h));     // [B, H]
        var z = output.forward(dropout.forward(nn.functional.relu(hidden.forward(dropout.forward(pooled))))).squeeze(-1);
        return (Low + (High - Low) * sigmoid(z)).MoveToOuterDisposeScope();
    }
}

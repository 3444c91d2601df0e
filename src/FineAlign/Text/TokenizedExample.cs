namespace FineAlign.Text;

/// <summary>
/// One training sequence. <see cref="LossMask"/>[t] is true where token t is a training target
/// (it is predicted from tokens before it), e.g. completion tokens in SFT.
/// </summary>
public sealed record TokenizedExample(int[] InputIds, bool[] LossMask)
{
    public int Length => InputIds.Length;
}

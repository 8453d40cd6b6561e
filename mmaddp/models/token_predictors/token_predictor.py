"""The token predictor (MAGE): masked VQ ids -> a distribution over codes.

The transformer blocks are timm's; the token embedding, the class/mask id
handling and the MLM layer tied to the word embeddings are MAGE-specific and
exist in no installed package, so they are written here.
"""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from timm.models.vision_transformer import Block

from mmaddp.checkpoint import load_state_into, read_state_dict
from mmaddp.checkpoint.layouts import is_unused_mage_key
from mmaddp.registry import MODELS
from ..diffusion import TruncatedNormalMaskRatio, eval_mode, make_generators, sample_ids
from ..layers import (FrozenPartsMixin, MlmLayer, init_like_release, init_table_from_codebook,
                      layer_norm, select_attention_kernel)
from ..utils.data_preprocessor import UNIT_RANGE_PREPROCESSOR


class TokenEmbedding(nn.Module):
    """``LayerNorm(word + position)`` then dropout, as MAGE's BERT-style
    embedding (keys ``word_embeddings``, ``position_embeddings``,
    ``LayerNorm``; LayerNorm eps 1e-6)."""

    def __init__(self, vocab_size: int, seq_len: int, dim: int, dropout: float = 0.1):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)
        self.position_embeddings = nn.Embedding(seq_len, dim)
        self.LayerNorm = layer_norm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = self.position_embeddings.weight[:ids.shape[1]]
        return self.dropout(self.LayerNorm(self.word_embeddings(ids) + pos))


@MODELS.register_module()
class TokenPredictor(FrozenPartsMixin, BaseModel):
    """MAGE token predictor: bidirectional transformer over VQ ids.

    Sequence: ``class_id`` at position 0, then the L ids with masked ones
    replaced by ``mask_id`` (so their true ids are hidden). Encoder: token
    embedding, timm blocks, LayerNorm. Decoder: linear projection, every
    masked position replaced by the projected class-position vector, learned
    positions, timm blocks, LayerNorm, MLM layer with the word embeddings
    (detached, as in MAGE: the table learns through the inputs only).
    Key names follow ``mage-vit{b,l}-1600.pth``; ``checkpoint=PATH`` loads it.
    Attention: timm blocks, SDPA or their explicit path (see
    :mod:`mmaddp.models.layers.attention`).

    Training (``mode='loss'``) is MAGE-style masked token modelling over the
    ids of a frozen ``tokenizer``: a mask ratio per image from the truncated
    normal (mean 0.55, std 0.25, [0.5, 1.0]), cross-entropy with label
    smoothing 0.1 on the masked positions. MAGE also drops part of the masked
    positions from the encoder to save compute (``encoder_drop``); by default
    every position is encoded, as the release does at prediction time.

    Args:
        codebook_size (int): number of VQ codes (1024).
        num_classes (int): class ids after the codes in the vocabulary (1000).
        class_id (int): the id at position 0 (MAGE's fake class, 1100).
        num_tokens (int): L, the ids per image (256).
        embed_dims, depth, num_heads: encoder (768/12/12 for MAGE ViT-B).
        decoder_embed_dims, decoder_depth, decoder_num_heads: decoder
            (768/8/16 for ViT-B; 1024/8/16 for ViT-L).
        drop_rate (float): dropout of embeddings, attention and block outputs.
        encoder_drop (float): fraction of the L positions, taken among the
            masked ones, that the encoder does not see (MAGE's
            ``mask_ratio_min`` drop, 0.5 there), in training and prediction
            alike: the decoder puts the class-position vector at every masked
            position anyway, so a dropped [MASK] token only saves the
            encoder's work. ``floor(L * encoder_drop)`` positions per batch,
            fewer where a sample has fewer masked (then all of them); chosen
            by fresh noise in training and by a fixed order in eval mode (no
            draw from the caller's generators). 0 encodes every position
            (the release). Defaults to 0.
        tokenizer (dict, optional): a frozen VQTokenizer config, needed only
            for training on images.
        codebook_token_table (bool): start the code rows of the token table
            from the ``tokenizer``'s code vectors
            (:func:`~mmaddp.models.layers.init_table_from_codebook`), at the
            std the initialiser gave them, instead of random rows. Not the
            release (MAGE draws them from normal(0.02)); at small widths the
            detached output table otherwise never learns what the codes
            look like (docs/demo_schedules.md). Needs ``tokenizer``; a
            ``checkpoint`` replaces the rows. Defaults to False.
        frozen (bool): eval mode and no gradients, for use inside ADDP.
        checkpoint (str, optional): a released MAGE file or an mmaddp one.
        init_cfg (dict | list[dict], optional): mmengine initialisers for the
            Linear / LayerNorm layers when training from scratch, in place of
            the release's xavier_uniform / constant (the embeddings stay
            normal(0.02)).
    """

    archs = {
        'b':
        dict(
            embed_dims=768,
            depth=12,
            num_heads=12,
            decoder_embed_dims=768,
            decoder_depth=8,
            decoder_num_heads=16),
        'l':
        dict(
            embed_dims=1024,
            depth=24,
            num_heads=16,
            decoder_embed_dims=1024,
            decoder_depth=8,
            decoder_num_heads=16),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'b',
                 codebook_size: int = 1024,
                 num_classes: int = 1000,
                 class_id: int = 1100,
                 num_tokens: int = 256,
                 mlp_ratio: float = 4.0,
                 drop_rate: float = 0.1,
                 encoder_drop: float = 0.0,
                 label_smoothing: float = 0.1,
                 mask_ratio: Optional[dict] = None,
                 tokenizer: Optional[dict] = None,
                 codebook_token_table: bool = False,
                 frozen: bool = False,
                 checkpoint: Optional[str] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            data_preprocessor=data_preprocessor or dict(UNIT_RANGE_PREPROCESSOR), init_cfg=init_cfg)
        if isinstance(arch, str):
            if arch not in self.archs:
                raise KeyError(f'Unknown TokenPredictor arch {arch!r}; choose {sorted(self.archs)}'
                               ' or give a dict')
            arch = self.archs[arch]
        unknown = set(arch) - set(self.archs['b'])
        if unknown or len(arch) != len(self.archs['b']):
            raise ValueError(f'TokenPredictor arch dict needs exactly {sorted(self.archs["b"])}')
        self.codebook_size, self.num_tokens = codebook_size, num_tokens
        self.vocab_size = codebook_size + num_classes + 1
        self.mask_id = self.vocab_size - 1
        if not codebook_size <= class_id < self.mask_id:
            raise ValueError(f'class_id {class_id} must lie in [{codebook_size}, {self.mask_id})')
        self.class_id = class_id
        dim, ddim = arch['embed_dims'], arch['decoder_embed_dims']

        self.token_emb = TokenEmbedding(self.vocab_size, num_tokens + 1, dim, drop_rate)
        block = dict(
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            attn_drop=drop_rate,
            proj_drop=drop_rate,
            norm_layer=layer_norm)
        self.blocks = nn.ModuleList(
            Block(dim, arch['num_heads'], **block) for _ in range(arch['depth']))
        self.norm = layer_norm(dim)
        self.decoder_embed = nn.Linear(dim, ddim)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, num_tokens + 1, ddim))
        self.decoder_blocks = nn.ModuleList(
            Block(ddim, arch['decoder_num_heads'], **block) for _ in range(arch['decoder_depth']))
        self.decoder_norm = layer_norm(ddim)
        self.mlm_layer = MlmLayer(ddim, dim, self.vocab_size)

        if not 0.0 <= encoder_drop < 1.0:
            raise ValueError(f'encoder_drop must lie in [0, 1), got {encoder_drop}')
        self.num_dropped = int(num_tokens * encoder_drop)
        # eval mode's fixed order of dropping among masked positions (not saved)
        order = torch.randperm(num_tokens, generator=torch.Generator().manual_seed(0))
        self.register_buffer('drop_order', order.float() / num_tokens, persistent=False)
        self.label_smoothing = label_smoothing
        self.mask_ratio = TruncatedNormalMaskRatio(**(mask_ratio or {}))
        self.hold_frozen(
            tokenizer=MODELS.build(dict(tokenizer, frozen=True)) if tokenizer else None)
        self.frozen = frozen
        if codebook_token_table and tokenizer is None:
            raise ValueError('TokenPredictor: codebook_token_table=True starts the token table '
                             'from the tokenizer\'s codes: configure a `tokenizer`')
        self.codebook_token_table = codebook_token_table
        self._init_own_weights()
        if checkpoint is not None:
            self.load_checkpoint(checkpoint)
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def _init_own_weights(self):
        """The release's init (MAGE: xavier_uniform Linears, normal(0.02)
        token table, position tables and learned decoder positions), or the
        ``init_cfg`` initialisers for the layers; then the code rows from the
        codebook where ``codebook_token_table``."""
        init_like_release(
            list(self.children()),
            embeddings=[
                self.token_emb.word_embeddings.weight, self.token_emb.position_embeddings.weight,
                self.decoder_pos_embed_learned
            ],
            layer_init_cfg=self.init_cfg)
        if self.codebook_token_table:
            init_table_from_codebook(self.token_emb.word_embeddings.weight, self.tokenizer.codebook)

    def init_weights(self):
        """Weights are set in ``__init__`` (and by ``checkpoint``), so the
        runner's init leaves them (and a loaded checkpoint) alone."""
        self._is_init = True

    @property
    def tokenizer(self):
        """The frozen ``VQTokenizer`` (``None`` when not configured)."""
        return self.frozen_part('tokenizer')

    def load_checkpoint(self, path: str):
        """Load ``mage-vit*-1600.pth`` (``model`` key) or an mmaddp checkpoint
        (runner ``state_dict``, optionally under ``token_predictor.``)."""
        return self.load_release_state(
            read_state_dict(path, 'token_predictor'), f'Checkpoint {path}')

    def load_release_state(self, state: dict, source: str):
        """Load a MAGE (or mmaddp) state dict: the release's unused tensors
        are dropped (and counted in the log); shapes are checked and earlier
        mmaddp layouts upgraded (see :func:`load_state_into`)."""
        unused = sorted(k for k in state if is_unused_mage_key(k))
        state = {k: v for k, v in state.items() if not is_unused_mage_key(k)}
        if unused:
            MMLogger.get_current_instance().info(
                f'TokenPredictor: {len(unused)} tensors of {source} are not used by the model '
                f'(MAE pixel parts, sin-cos tables, position_ids, vqgan copy): {unused[:6]}...')
        return load_state_into(self, state, source)

    def train(self, mode: bool = True):
        return super().train(mode and not self.frozen)

    # ---------------------------------------------------------------- API
    def logits(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Ids B x L and mask B x L (True = masked, hidden) -> logits over the
        codes B x L x codebook_size."""
        b, length = ids.shape
        if mask.shape != ids.shape:
            raise ValueError(f'mask {tuple(mask.shape)} and ids {tuple(ids.shape)} differ in shape')
        tokens = torch.where(mask, torch.full_like(ids, self.mask_id), ids)
        tokens = torch.cat([ids.new_full((b, 1), self.class_id), tokens], dim=1)
        x = self.token_emb(tokens)
        select_attention_kernel([*self.blocks, *self.decoder_blocks], x.device)
        keep = self._encoded_positions(mask)
        if keep is not None:  # the class token and the kept positions only
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        for blk in self.blocks:
            x = blk(x)
        x = self.decoder_embed(self.norm(x))
        if keep is not None:  # dropped positions are masked: filled below
            index = keep[..., None].expand(-1, -1, x.shape[-1])
            x = x[:, :1].expand(-1, length + 1, -1).scatter(1, index, x)  # out of place
        full_mask = torch.cat([mask.new_zeros(b, 1), mask], dim=1)
        x = torch.where(full_mask[..., None], x[:, :1].expand_as(x), x)
        x = x + self.decoder_pos_embed_learned[:, :length + 1]
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        logits = self.mlm_layer(x, self.token_emb.word_embeddings.weight)
        return logits[:, 1:, :self.codebook_size]

    def _encoded_positions(self, mask: torch.Tensor) -> Optional[torch.Tensor]:
        """Sequence indices (class token 0, then 1..L) the encoder sees, B x
        (L + 1 - n), ascending; None where none is dropped. n is
        ``num_dropped`` capped by the fewest masked positions in the batch
        (one count for the batch: fixed shapes, no per-sample loop)."""
        if self.num_dropped == 0:
            return None
        n = min(self.num_dropped, int(mask.sum(1).min()))
        if n == 0:
            return None
        order = torch.rand(mask.shape, device=mask.device) if self.training else self.drop_order
        # masked positions first (score >= 1), in the drop order; the first n go
        score = mask.float() + order.expand_as(mask)
        kept = score.argsort(dim=1, descending=True)[:, n:].sort(dim=1).values + 1
        return torch.cat([kept.new_zeros(mask.shape[0], 1), kept], dim=1)

    def predict_probs(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Ids B x L, mask B x L (bool) -> probabilities B x L x codebook_size
        (masked positions' ids are hidden from the model)."""
        return self.logits(ids, mask).float().softmax(dim=-1)

    @torch.no_grad()
    def generate(self,
                 num_samples: int,
                 steps: int = 20,
                 schedule: str = 'cosine',
                 temperature: float = 6.0,
                 temperature_decay: bool = True,
                 top_p: Optional[float] = None,
                 seed: Optional[int] = None,
                 generator=None,
                 seeds: Optional[Sequence[int]] = None,
                 return_ids: bool = False) -> torch.Tensor:
        """MAGE-style unconditional sampling from the predictor alone: the
        same sampler as :meth:`ADDP.generate` (steps, schedule, temperature),
        but each step reads the ids so far instead of pixels decoded from
        them. The final ids are decoded by the predictor's ``tokenizer``.

        Returns:
            Tensor: images B x 3 x H x W in [0, 1], or ids B x L with
            ``return_ids`` (then no tokenizer is needed).
        """
        if not return_ids and self.tokenizer is None:
            raise RuntimeError('TokenPredictor.generate decodes with its `tokenizer`: configure '
                               'one, or pass return_ids=True')
        device = self.token_emb.word_embeddings.weight.device
        generator = make_generators(num_samples, device, seed, generator, seeds)
        with eval_mode(self):
            ids = sample_ids(
                self.predict_probs,
                num_samples,
                self.num_tokens,
                steps,
                generator,
                device,
                schedule=schedule,
                temperature=temperature,
                temperature_decay=temperature_decay,
                top_p=top_p)
        if return_ids:
            return ids
        side = int(round(self.num_tokens**0.5))
        return self.tokenizer.decode_ids(ids.view(num_samples, side, side)).float().clamp(0, 1)

    # ----------------------------------------------------------- training
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[List] = None,
                mode: str = 'tensor'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            ids = self._image_ids(inputs)
            return self.logits(ids,
                               self.mask_ratio.sample_mask(ids.shape[0], ids.shape[1], ids.device))
        raise ValueError(f'Invalid mode {mode!r}')

    @torch.no_grad()
    def _image_ids(self, images: torch.Tensor) -> torch.Tensor:
        if self.tokenizer is None:
            raise RuntimeError('Training a TokenPredictor on images needs a `tokenizer` config')
        ids, _ = self.tokenizer.encode(images)
        if ids[0].numel() != self.num_tokens:
            raise ValueError(f'The tokenizer gives {ids[0].numel()} ids per image, the predictor '
                             f'expects num_tokens={self.num_tokens}')
        return ids.flatten(1)

    def loss(self, inputs: torch.Tensor, data_samples=None) -> Dict[str, torch.Tensor]:
        ids = self._image_ids(inputs)
        mask = self.mask_ratio.sample_mask(*ids.shape, device=ids.device)
        logits = self.logits(ids, mask)
        loss = F.cross_entropy(
            logits[mask].float(), ids[mask], label_smoothing=self.label_smoothing)
        return dict(loss=loss)

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, data_samples=None) -> List[dict]:
        """Masked-token predictions with a fixed, seeded mask per batch, for
        :class:`MaskedTokenAccuracy`: per image the argmax ``pred``, the true
        ``target`` and the ``nll`` of the true id at the masked positions."""
        ids = self._image_ids(inputs)
        gen = torch.Generator(device='cpu').manual_seed(0)
        mask = self.mask_ratio.sample_mask(*ids.shape, device=ids.device, generator=gen)
        logits = self.logits(ids, mask).float()
        pred = logits.argmax(-1)
        nll = -logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]
        return [
            dict(pred=p[m].cpu(), target=t[m].cpu(), nll=n[m].cpu(), ids=t.cpu())
            for p, t, n, m in zip(pred, ids, nll, mask)
        ]

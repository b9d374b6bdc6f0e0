# test_launcher.py: the synthetic demo shrunk to seconds, with a hook that kills rank 1 at iteration 2.
_base_ = ['../../configs/arcface/vit_synthetic_cpu.py']
custom_imports = dict(imports=['raise_on_rank_plugin'])
custom_hooks = [dict(type='RaiseOnRankHook', rank=1, at_iter=2)]
model = dict(head=dict(num_classes=20))
train_dataloader = dict(batch_size=8, num_workers=1, dataset=dict(num_classes=20, images_per_class=4))
train_cfg = dict(max_iters=6, max_epochs=6, raw_pixel_floor=False)
runtime = dict(log_interval=1, checkpoint_interval=0, eval_interval=0)
val_evaluators = []
